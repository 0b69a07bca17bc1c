"""``python -m serve.provider``: run the local provider (see :mod:`serve.provider.run`)."""

import sys

from serve.provider.run import main

sys.exit(main())
