DROP INDEX `upstream_accounts_account`;--> statement-breakpoint
CREATE INDEX `upstream_accounts_account` ON `upstream_accounts` (`account_id`,`created_at`);