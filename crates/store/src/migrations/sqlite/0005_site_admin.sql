-- Migration 5: site administration. A disabled site keeps its data and bookkeeping but is
-- refused at sync (`disabled_at`, when it was disabled); the log position a site's last noted
-- pull reached, so that the central server can say what the site is still owed, and what the
-- site said it still had to push.
ALTER TABLE site_sync ADD COLUMN disabled_at TEXT;
ALTER TABLE site_sync ADD COLUMN pulled_seq INTEGER;
ALTER TABLE site_sync ADD COLUMN pulled_xid INTEGER;
ALTER TABLE site_sync ADD COLUMN waiting_to_push INTEGER;
