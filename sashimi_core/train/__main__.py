import sys

from sashimi_core.train.trainer import main

sys.exit(main())
