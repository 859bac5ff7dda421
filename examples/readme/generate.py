"""Stub of the README's generate.py: 'decodes' and prints a BLEU score line."""

import argparse

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("--beam", type=int, default=5)
p.add_argument("--path", required=True)
a = p.parse_args()
loss = float(open(a.path).read())
print(f"Generate test with beam={a.beam}: BLEU4 = {40 - 10 * loss:.2f}, 60.1/35.2/22.0/14.1")
