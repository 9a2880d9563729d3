from __future__ import annotations

from livecommerce.cli import main

raise SystemExit(main())
