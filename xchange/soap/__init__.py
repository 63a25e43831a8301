"""SOAP: the only place where xchange parses XML (entity resolution and network access off,
no DOCTYPE accepted)."""
