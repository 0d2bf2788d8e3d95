-- Migration 2: refused changes an administrator has looked at (`central site rejected SITE
-- --clear`; until then one counts towards the site's quarantine), and the last batch a site
-- pushed (the position it followed and a digest of its changes, so that the same batch sent
-- again, its answer lost, is recognised and answered again).
ALTER TABLE rejection ADD COLUMN IF NOT EXISTS resolved_at TEXT;
ALTER TABLE site_sync ADD COLUMN IF NOT EXISTS push_from BIGINT;
ALTER TABLE site_sync ADD COLUMN IF NOT EXISTS push_digest TEXT;
