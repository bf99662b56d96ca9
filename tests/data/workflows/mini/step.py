"""Step program of the mini_crate test workflow (shipped in crates, never run by the tests)."""

import sys

if __name__ == "__main__":
    print("mini step", sys.argv[1:])
