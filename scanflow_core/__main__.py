import sys

from scanflow_core.cli import main

sys.exit(main())
