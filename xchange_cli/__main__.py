import sys

from xchange_cli.main import main

sys.exit(main())
