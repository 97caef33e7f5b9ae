"""``python -m consent_ledger.cli``: how `consent-ledger dev` starts its worker and API."""

import sys

from consent_ledger.cli import main

sys.exit(main())
