"""`python -m bench`: the gateway's hop benchmark (see `bench.run`)."""

import sys

from bench.run import main

sys.exit(main())
