#!/usr/bin/env bash
# A real Apache ZooKeeper for the registry tests (registry/zookeeper, e2e).
# Tests call this script; nobody needs to by hand.
#
#   scripts/zookeeper-peer.sh install
#       Debian's zookeeperd (ZooKeeper 3.8 and its jars; the JRE comes with
#       install-test-deps.sh) when missing, with apt-get as root or with sudo;
#       its service is not started. Where apt cannot install
#       it, Apache ZooKeeper's jars and their dependencies from Maven Central
#       (with mvn, ~15 s cold), downloaded once per version into
#       ${XDG_CACHE_HOME:-~/.cache}/breeze-peers/zookeeper-<version>/, outside
#       the clone. Prints ZOOKEEPER_CLASSPATH=... (the jars and the logging
#       configuration directory).
#   scripts/zookeeper-peer.sh server CONFIG
#       Runs ZooKeeper in the foreground with CONFIG (a zoo.cfg the test
#       writes: clientPortAddress=127.0.0.1, a free clientPort, a temporary
#       dataDir). exec: killing the caller's process stops the server.
set -euo pipefail

# Maven Central's fallback (Debian bookworm ships 3.8.0).
ZOOKEEPER_VERSION=3.8.4
cache="${XDG_CACHE_HOME:-$HOME/.cache}/breeze-peers/zookeeper-$ZOOKEEPER_VERSION"
debian_jars=/usr/share/java/zookeeper.jar

classpath() {
	if [ -f "$debian_jars" ]; then
		# Debian's own classpath (/etc/zookeeper/conf/environment): the
		# jar's manifest names the libraries; the conf directory holds the
		# log4j settings.
		# slf4j's log4j binding and log4j, for its logs on stderr.
		local cp=/etc/zookeeper/conf:$debian_jars:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
		echo "$cp"
		return
	fi
	if [ -d "$cache/lib" ]; then
		echo "$cache/conf:$cache/lib/*"
		return
	fi
	return 1
}

install() {
	if ! classpath >/dev/null; then
		local sudo=""
		[ "$(id -u)" = 0 ] || sudo=sudo
		echo "installing: zookeeperd" >&2
		# The tests start their own server on a free port: Debian's service
		# must not start on :2181. A policy-rc.d answering 101 ("action not
		# allowed") forbids that, for this install only.
		local policy=/usr/sbin/policy-rc.d
		if [ ! -e "$policy" ]; then
			printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
			$sudo chmod +x "$policy"
			trap '$sudo rm -f "$policy"' EXIT
		fi
		{ $sudo apt-get update -qq >&2 &&
			DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends zookeeperd >&2; } ||
			echo "apt-get could not install zookeeperd; trying Maven Central" >&2
		classpath >/dev/null || download
	fi
	echo "ZOOKEEPER_CLASSPATH=$(classpath)"
}

# download fetches Apache ZooKeeper's server jar and its runtime
# dependencies (org.apache.zookeeper:zookeeper:<version>) from Maven
# Central with Maven itself, into the cache: a temporary directory, then a
# rename, so that an interrupted download never leaves half a server there.
download() {
	echo "downloading: Apache ZooKeeper $ZOOKEEPER_VERSION into $cache" >&2
	mkdir -p "$(dirname "$cache")"
	local tmp
	tmp="$(mktemp -d "$(dirname "$cache")/.zookeeper.XXXXXX")"
	trap 'rm -rf "$tmp"' RETURN
	cat >"$tmp/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>breeze</groupId><artifactId>zookeeper-peer</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.zookeeper</groupId><artifactId>zookeeper</artifactId><version>$ZOOKEEPER_VERSION</version></dependency>
    <!-- provided-scope in ZooKeeper's pom, shipped in its distribution; the server needs them -->
    <dependency><groupId>io.dropwizard.metrics</groupId><artifactId>metrics-core</artifactId><version>4.1.12.1</version></dependency>
    <dependency><groupId>org.xerial.snappy</groupId><artifactId>snappy-java</artifactId><version>1.1.10.5</version></dependency>
  </dependencies>
</project>
POM
	mvn -q -f "$tmp/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >&2
	rm "$tmp/pom.xml"
	# Logback logs everything at debug without a configuration.
	mkdir -p "$tmp/conf"
	cat >"$tmp/conf/logback.xml" <<'XML'
<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%d{ISO8601} %-5p [%t] %c{1} - %m%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="CONSOLE"/></root>
</configuration>
XML
	mv "$tmp" "$cache"
}

server() {
	local cfg="$1"
	local cp
	cp="$(classpath)" || { echo "ZooKeeper is not installed: run $0 install" >&2; exit 1; }
	# No JMX, no admin server (it would take :8080); logs to stderr.
	exec java -cp "$cp" -Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true \
		-Dzookeeper.root.logger=WARN,CONSOLE -Dzookeeper.console.threshold=WARN \
		org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg"
}

case "${1:-}" in
install) install ;;
server) server "$2" ;;
*)
	echo "usage: $0 install | server CONFIG" >&2
	exit 2
	;;
esac
