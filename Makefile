# The README's two commands. Both work from a clone folder of any name.
.PHONY: run test

run:
	python3 tools/dev.py run

test:
	python3 tools/dev.py test
