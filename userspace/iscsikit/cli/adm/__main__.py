"""`python -m iscsikit.cli.adm`: the same as iscsikit-adm."""

import sys

from .main import main

sys.exit(main())
