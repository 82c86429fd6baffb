# weft: the two commands are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Debian packages weft needs, and only those.
DEB_PACKAGES := etcd-server etcd-client redis-server iproute2 iptables nftables conntrack \
	containernetworking-plugins iperf3 haproxy iputils-ping

NPM_STAMP := node_modules/.weft-lock.sha256

.PHONY: deps deb-deps npm-deps native build lint typecheck test test-only demo clean bench

deps: deb-deps npm-deps

# Quick when everything is present: dpkg-query answers in milliseconds, so apt is only run
# (update first, then install) when a package is missing.
deb-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing $$missing"; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "deps: Debian packages present"; fi

# npm ci wipes node_modules, so it runs only when package-lock.json changed since the last one.
npm-deps:
	@want=$$(sha256sum package-lock.json | cut -d' ' -f1); \
	if [ "$$(cat $(NPM_STAMP) 2>/dev/null)" != "$$want" ]; then \
		npm ci --no-audit --no-fund; echo "$$want" > $(NPM_STAMP); \
	else echo "deps: node_modules up to date"; fi

# node-gyp as bundled with npm (library-notes: node-gyp 13 needs a newer Node); configure once,
# then let its make rebuild only what changed.
NODE_GYP := node $(shell npm prefix -g)/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js \
	--nodedir=$(shell npm config get nodedir)

build: npm-deps native
	npx tsc -p tsconfig.build.json

native: npm-deps
	@cd native && { [ -f build/Makefile ] || $(NODE_GYP) configure --silent; } && $(NODE_GYP) build --silent

lint: npm-deps
	npx eslint .
	npx prettier --check . >/dev/null
	node scripts/check-cycles.mjs src

typecheck: npm-deps
	npx tsc -p tsconfig.json --noEmit

# Every test: unit tests in parallel, namespace/server tests serially (see .taprc).
test: deps build lint typecheck test-only

test-only:
	node scripts/run-tests.mjs

demo: deps build
	node dist/scripts/demo.js

clean:
	rm -rf dist .tap native/build
