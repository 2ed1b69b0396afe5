CREATE TABLE `tool_audit` (
	`id` integer PRIMARY KEY NOT NULL,
	`at` integer NOT NULL,
	`account_id` text NOT NULL,
	`client_id` text NOT NULL,
	`tool` text NOT NULL,
	`decision` text NOT NULL,
	`outcome` text,
	`upstream_status` integer,
	`duration_ms` integer
);
--> statement-breakpoint
CREATE INDEX `tool_audit_account` ON `tool_audit` (`account_id`,`at`);--> statement-breakpoint
CREATE TABLE `tool_rate_limits` (
	`kind` text NOT NULL,
	`key` text NOT NULL,
	`full_at` integer NOT NULL,
	PRIMARY KEY(`kind`, `key`)
);
