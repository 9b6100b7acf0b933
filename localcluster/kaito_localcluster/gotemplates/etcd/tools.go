//go:build tools

// Package tools pins the etcd server command built by kaito_localcluster.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
