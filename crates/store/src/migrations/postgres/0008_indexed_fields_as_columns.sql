-- Migration 8: on SQLite, the fields its expression indexes found become columns (see the
-- SQLite file for why). PostgreSQL keeps its expression indexes: nothing to do here.
SELECT 1;
