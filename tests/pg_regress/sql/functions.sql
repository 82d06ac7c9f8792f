-- The public interface: every function of the extension with its arguments and result, and
-- the views and settings (with their built-in defaults) users read. A change here is a change
-- users see.
CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE;
SELECT extversion FROM pg_extension WHERE extname = 'lightretriever';
\pset format unaligned
\df lightretriever.*
\pset format aligned
\dv lightretriever.*
SELECT name, boot_val AS default, unit, context, short_desc FROM pg_settings WHERE name LIKE 'lightretriever.%' ORDER BY name;
