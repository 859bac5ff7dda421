"""The seed README's Examiner example over this sweep: python analyze.py [output]."""

import re
import sys

from mlrunner.examine import Examiner, latest_log


def parse_bleu(log_path):
    if log_path is None:
        return None
    matches = re.findall(r"BLEU4 = ([\d.]+)", open(log_path).read())
    return float(matches[-1]) if matches else None


def add_bleu(output_dir, experiment, caches):
    experiment.metric["bleu"] = parse_bleu(latest_log("test", output_dir))


examiner = Examiner()
examiner.add(add_bleu)
examiner.exam(output=sys.argv[1] if len(sys.argv) > 1 else "output", regex=".*")
df = examiner.table(print_tsv=True)
