"""The exporter's HTTP side: the server, and what each path answers."""
