"""``python -m phf.spa ...`` = ``phf-spa ...`` (see ``phf.spa.rounds``)."""

from phf.spa.rounds import main

main()
