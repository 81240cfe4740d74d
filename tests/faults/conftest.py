"""The fault and bad-input campaign kept as regression tests: each case of the campaign, on generated data.

The helpers of the main suite (edge_models, convert_models, torch_files, test_report) live one folder up.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
