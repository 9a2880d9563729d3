from __future__ import annotations

from livecommerce.ops.cli import main

raise SystemExit(main())
