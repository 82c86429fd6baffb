# weft: the two commands are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Debian packages weft needs, and only those.
DEB_PACKAGES := etcd-server etcd-client redis-server iproute2 iptables nftables conntrack \
	containernetworking-plugins iperf3 haproxy iputils-ping valgrind curl

NPM_STAMP := node_modules/.weft-lock.sha256

.PHONY: deps deb-deps npm-deps native native-check sanitize fuzz build lint typecheck test test-only demo clean bench install

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
	@# kubectl (weftctl's tests apply what `kubectl create service --dry-run=client` prints): Debian's
	@# kubernetes-client, unless a kubectl is already installed (another package's /usr/bin/kubectl
	@# makes dpkg refuse kubernetes-client).
	@if ! command -v kubectl >/dev/null; then \
		echo "deps: installing kubernetes-client"; apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; fi

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
	@cd native && { [ build/Makefile -nt binding.gyp ] || $(NODE_GYP) configure --silent; } && $(NODE_GYP) build --silent

lint: npm-deps
	npx eslint .
	npx prettier --check . >/dev/null
	node scripts/check-cycles.mjs src

typecheck: npm-deps
	npx tsc -p tsconfig.json --noEmit

# Every test: unit tests in parallel, namespace/server tests serially (see .taprc), and the
# native code's own tests plain, under ASan/UBSan and under valgrind memcheck.
test: deps build lint typecheck native-check test-only

test-only:
	node scripts/run-tests.mjs

demo: deps build
	node dist/scripts/demo.js

# The native code without Node (relay over loopback TCP, packet functions), built twice: with
# ASan+UBSan (any finding aborts) and plain for valgrind (any error or leak fails).
NATIVE_SRC := native/src/io-loop.cc native/src/offload.cc native/src/packet.cc native/src/tcp-relay.cc native/src/tun-forwarder.cc native/src/udp-relay.cc
NATIVE_CXX := g++ -std=c++17 -g -pthread -Wall -Wextra -Wno-unused-parameter
NATIVE_CHECK := native/build/check

native-check:
	@mkdir -p $(NATIVE_CHECK)
	$(NATIVE_CXX) -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
		native/test/native_test.cc $(NATIVE_SRC) -o $(NATIVE_CHECK)/native_test_asan
	$(NATIVE_CHECK)/native_test_asan
	$(NATIVE_CXX) -O1 native/test/native_test.cc $(NATIVE_SRC) -o $(NATIVE_CHECK)/native_test
	valgrind -q --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=all --error-exitcode=1 \
		$(NATIVE_CHECK)/native_test

# The addon itself built with ASan+UBSan and loaded into Node (which is not instrumented, hence
# the preloaded runtimes and no leak check of Node's own heap), running the addon's tests.
SANITIZE_ADDON := native/build/sanitize/weft_native.node
sanitize: build native-check
	@mkdir -p $(dir $(SANITIZE_ADDON))
	g++ -shared -fPIC -std=c++17 -O1 -g -pthread -fsanitize=address,undefined -fno-sanitize-recover=all \
		-fno-omit-frame-pointer -I$(shell npm config get nodedir)/include/node \
		-I$(shell node -p "require('node-addon-api').include_dir") \
		-DNAPI_VERSION=8 -DNAPI_DISABLE_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED \
		native/src/*.cc -o $(SANITIZE_ADDON)
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so) \
		ASAN_OPTIONS=detect_leaks=0 WEFT_NATIVE_PATH=$(CURDIR)/$(SANITIZE_ADDON) \
		npx tap --disable-coverage --jobs=1 test/unit/native test/integration/native

# libFuzzer over the udp backend's packet paths (parser, ICMP, TSO segmentation and the UDP GSO
# batch plan, the UDP GRO split with the lease check and coalescing) for FUZZ_SECONDS (60 by
# default), from the seed corpus in the repo; new inputs it finds stay in native/build/fuzz.
# Needs clang, installed here on first use.
FUZZ_PACKAGES := clang libclang-rt-14-dev
FUZZ_SECONDS ?= 60
fuzz:
	@missing=$$(for p in $(FUZZ_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
	@mkdir -p native/build/fuzz/corpus
	clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined native/fuzz/packet_fuzz.cc native/src/packet.cc native/src/offload.cc \
		-o native/build/fuzz/packet_fuzz
	native/build/fuzz/packet_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		native/build/fuzz/corpus native/fuzz/corpus

clean:
	rm -rf dist .tap native/build

# The benchmarks (root: each runs in network namespaces of its own), then docs/benchmarks.md from
# bench/results/*.json. BENCH_ARGS passes options, e.g. BENCH_ARGS="--sizes 1000 --rss-services 0";
# SELECTOR_BENCH_ARGS those of the selector benchmark, e.g. SELECTOR_BENCH_ARGS=--quick.
bench: deps build
	node dist/bench/proxy-sync.js $(BENCH_ARGS)
	node dist/bench/relay.js
	node dist/bench/overlay.js
	node dist/bench/selector.js $(SELECTOR_BENCH_ARGS)
	node dist/bench/report.js

# The built tree, the commands, the systemd units and their environment files, under DESTDIR (a
# staging root for packaging and tests; empty installs on this machine). The code lives in
# $(PREFIX)/lib/weft (compiled dist/, the addon, production node_modules, package.json for the
# version) and the commands are relative symlinks into it, which the wrappers resolve, so the tree
# works both staged and in place. weft-cni is also linked into CNI_BIN_DIR, where runtimes look up
# plugins. The units get $(PREFIX)/bin in ExecStart; environment files already in /etc/default are
# an operator's configuration and are never overwritten. Nothing outside DESTDIR is touched, and
# systemd is not reloaded: systemd/README.md says what to run.
PREFIX ?= /usr/local
DESTDIR ?=
CNI_BIN_DIR ?= /opt/cni/bin
UNIT_DIR ?= /etc/systemd/system
ENV_DIR ?= /etc/default
WEFT_COMMANDS := weft-flanneld weft-proxy weft-controller weftctl weft-cni
WEFT_UNITS := weft-flanneld weft-proxy weft-controller

install: build
	@lib='$(DESTDIR)$(PREFIX)/lib/weft'; \
	rm -rf "$$lib/dist" "$$lib/node_modules" "$$lib/native" "$$lib/bin"; \
	install -d "$$lib/bin" "$$lib/native/build/Release" "$$lib/node_modules" "$$lib/default" \
		'$(DESTDIR)$(PREFIX)/bin' '$(DESTDIR)$(CNI_BIN_DIR)' '$(DESTDIR)$(UNIT_DIR)' '$(DESTDIR)$(ENV_DIR)'; \
	cp -R dist "$$lib/dist"; \
	install -m 0644 package.json "$$lib/package.json"; \
	install -m 0755 native/build/Release/weft_native.node "$$lib/native/build/Release/"; \
	npm ls --omit=dev --parseable --all | sed -n 's|^$(CURDIR)/node_modules/||p' | sort \
		| awk '{ for (p in kept) if (index($$0, p "/") == 1) next; kept[$$0]; print }' \
		| tar -C node_modules -cf - -T - | tar -C "$$lib/node_modules" -xf -; \
	for c in $(WEFT_COMMANDS); do \
		install -m 0755 "bin/$$c" "$$lib/bin/$$c"; \
		ln -sfr "$$lib/bin/$$c" '$(DESTDIR)$(PREFIX)/bin/'"$$c"; \
	done; \
	ln -sfr "$$lib/bin/weft-cni" '$(DESTDIR)$(CNI_BIN_DIR)/weft-cni'; \
	for u in $(WEFT_UNITS); do \
		sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' "systemd/$$u.service" > '$(DESTDIR)$(UNIT_DIR)/'"$$u.service"; \
		chmod 0644 '$(DESTDIR)$(UNIT_DIR)/'"$$u.service"; \
		install -m 0644 "systemd/default/$$u" "$$lib/default/$$u"; \
		env='$(DESTDIR)$(ENV_DIR)/'"$$u"; \
		if [ -e "$$env" ]; then echo "install: kept $$env (the shipped one is $$lib/default/$$u)"; \
		else install -m 0600 "systemd/default/$$u" "$$env"; fi; \
	done; \
	echo "install: weft in $$lib, commands in $(DESTDIR)$(PREFIX)/bin, units in $(DESTDIR)$(UNIT_DIR)"
	@# The wrappers run the `node` on PATH; systemd's PATH is fixed, so a node found only elsewhere
	@# (nvm, a home directory) would make the units fail with status 127.
	@node=$$(command -v node); case "$$(dirname "$$node")" in \
		/usr/local/sbin|/usr/local/bin|/usr/sbin|/usr/bin|/sbin|/bin) ;; \
		*) echo "install: warning: node is $$node, not on systemd's PATH; link it into /usr/local/bin" >&2;; esac
