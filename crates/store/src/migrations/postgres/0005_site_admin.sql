-- Migration 5: site administration. A disabled site keeps its data and bookkeeping but is
-- refused at sync (`disabled_at`, when it was disabled); the log position a site's last noted
-- pull reached, so that the central server can say what the site is still owed, and what the
-- site said it still had to push.
ALTER TABLE site_sync ADD COLUMN IF NOT EXISTS disabled_at TEXT;
ALTER TABLE site_sync ADD COLUMN IF NOT EXISTS pulled_seq BIGINT;
ALTER TABLE site_sync ADD COLUMN IF NOT EXISTS pulled_xid BIGINT;
ALTER TABLE site_sync ADD COLUMN IF NOT EXISTS waiting_to_push BIGINT;
