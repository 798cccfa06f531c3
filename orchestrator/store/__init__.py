"""The state store: the only place that speaks SQL (connection, migrations, queries)."""
