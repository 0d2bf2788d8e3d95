-- Migration 2: refused changes an administrator has looked at (`central site rejected SITE
-- --clear`; until then one counts towards the site's quarantine), and the last batch a site
-- pushed (the position it followed and a digest of its changes, so that the same batch sent
-- again, its answer lost, is recognised and answered again).
ALTER TABLE rejection ADD COLUMN resolved_at TEXT;
ALTER TABLE site_sync ADD COLUMN push_from INTEGER;
ALTER TABLE site_sync ADD COLUMN push_digest TEXT;
