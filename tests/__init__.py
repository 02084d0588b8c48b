"""eqbench tests (a package, so ``tests.fixtures`` resolves here even when an installed
distribution such as mmsegmentation 1.2.2 ships a top-level ``tests`` package)."""
