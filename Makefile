.PHONY: test e2e ci

# The README's test command (what .ci/run runs).
test:
	go test -race -count=1 ./...

# End-to-end tests only, verbose (KAMGO_SHARED defaults to ../shared).
e2e:
	go test -race -count=1 -v ./tests/...

# What CI runs in a fresh clone.
ci:
	bash .ci/run
