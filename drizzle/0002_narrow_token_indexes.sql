DROP INDEX `oidc_models_expires`;--> statement-breakpoint
DROP INDEX `oidc_models_grant`;--> statement-breakpoint
DROP INDEX `oidc_models_uid`;--> statement-breakpoint
CREATE INDEX `oidc_models_grant` ON `oidc_models` (`grant_id_hash`) WHERE "oidc_models"."grant_id_hash" IS NOT NULL;--> statement-breakpoint
CREATE INDEX `oidc_models_uid` ON `oidc_models` (`uid_hash`) WHERE "oidc_models"."uid_hash" IS NOT NULL;