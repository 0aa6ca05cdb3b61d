#!/bin/sh
# bin/wso2server.sh of an API-M 2.2 traffic manager started with -DportOffset=1: the JVM start line, where operators add
# system properties such as -DportOffset and -Dprofile.
CARBON_HOME=/opt/wso2am
exec "$JAVA_HOME/bin/java" \
    -Xms256m -Xmx1024m \
    -Dprofile=traffic-manager \
    -DportOffset=1 \
    -Dcarbon.home="$CARBON_HOME" \
    org.wso2.carbon.bootstrap.Bootstrap "$@"
