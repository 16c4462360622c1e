"""Generated code for the hubspoke.v1 API: the report stream and the management services."""
