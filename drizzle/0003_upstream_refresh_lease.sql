ALTER TABLE `upstream_accounts` ADD `version` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `upstream_accounts` ADD `lease_owner` text;--> statement-breakpoint
ALTER TABLE `upstream_accounts` ADD `lease_expires_at` integer;