"""Allow ``python -m ft_exporter``."""

from ft_exporter.cli import main

raise SystemExit(main())
