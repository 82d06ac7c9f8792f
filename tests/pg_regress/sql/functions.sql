-- The public interface: every function of the extension with its arguments and result, and
-- the views and settings users read. A change here is a change users see.
CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE;
SELECT extversion FROM pg_extension WHERE extname = 'lightretriever';
\df lightretriever.*
\dv lightretriever.*
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'lightretriever.%' ORDER BY name;
