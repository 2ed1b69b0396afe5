CREATE TABLE `accounts` (
	`id` text PRIMARY KEY NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `oidc_models` (
	`model` text NOT NULL,
	`id_hash` text NOT NULL,
	`grant_id_hash` text,
	`uid_hash` text,
	`payload` text NOT NULL,
	`expires_at` integer,
	`consumed_at` integer,
	PRIMARY KEY(`model`, `id_hash`)
);
--> statement-breakpoint
CREATE INDEX `oidc_models_grant` ON `oidc_models` (`grant_id_hash`);--> statement-breakpoint
CREATE INDEX `oidc_models_uid` ON `oidc_models` (`uid_hash`);--> statement-breakpoint
CREATE INDEX `oidc_models_expires` ON `oidc_models` (`expires_at`);--> statement-breakpoint
CREATE TABLE `server_secrets` (
	`name` text PRIMARY KEY NOT NULL,
	`sealed` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `upstream_accounts` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`provider` text NOT NULL,
	`subject` text NOT NULL,
	`email` text,
	`name` text,
	`sealed_tokens` text NOT NULL,
	`token_expires_at` integer,
	`status` text DEFAULT 'ok' NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`account_id`) REFERENCES `accounts`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `upstream_accounts_subject` ON `upstream_accounts` (`provider`,`subject`);--> statement-breakpoint
CREATE INDEX `upstream_accounts_account` ON `upstream_accounts` (`account_id`);--> statement-breakpoint
CREATE TABLE `upstream_logins` (
	`state_hash` text PRIMARY KEY NOT NULL,
	`provider` text NOT NULL,
	`browser_hash` text NOT NULL,
	`sealed` text NOT NULL,
	`expires_at` integer NOT NULL
);
