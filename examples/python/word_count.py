"""Counts words in text files in parallel worker processes, with a timeout
per file, retries on a crashed worker, and progress as files finish.

    python examples/python/word_count.py [FILE ...]

Without arguments it writes a few sample files to a temporary folder and
counts those.
"""

import collections
import os
import re
import sys
import tempfile

import seedcore

WORD = re.compile(r"[a-z']+")


def count_words(path):
    """Runs in a worker process: the word counts of one file."""
    counts = collections.Counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            counts.update(WORD.findall(line.lower()))
    return path, counts


def sample_files(folder):
    text = "the quick brown fox jumps over the lazy dog\n"
    paths = []
    for i in range(8):
        path = os.path.join(folder, f"sample{i}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text * (1000 * (i + 1)))
        paths.append(path)
    return paths


def main(paths):
    total = collections.Counter()
    with seedcore.ConcurrentSystem(processes={"core": 2, "max": 4}) as system:
        futures = [
            system.submit_process(count_words, p, timeout=60, retries=1, retry_on="crash")
            for p in paths
        ]
        for fut in seedcore.as_completed(futures):
            try:
                path, counts = fut.result()
            except Exception as e:  # one bad file does not stop the rest
                print(f"failed: {e!r}", file=sys.stderr)
                continue
            total.update(counts)
            print(f"{os.path.basename(path)}: {sum(counts.values())} words")
        stats = system.stats()
    print("most common:", total.most_common(3))
    print(f"{stats['completed']} tasks completed")
    return total


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1:])
    else:
        with tempfile.TemporaryDirectory() as d:
            total = main(sample_files(d))
            assert total["the"] == 2 * 1000 * sum(range(1, 9)), total["the"]
