module github.com/kamgo/kamgo

go 1.26

require (
	github.com/chzyer/readline v1.5.1
	github.com/emiago/sipgo v1.7.3
	github.com/gorilla/websocket v1.5.3
	github.com/icholy/digest v1.2.0
	github.com/mattn/go-sqlite3 v1.14.53
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	go.starlark.net v0.0.0-20260908191801-89a6a09411d5
	golang.org/x/sys v0.42.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/gobwas/pool v0.2.1 // indirect
	github.com/gobwas/ws v1.3.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	golang.org/x/sync v0.16.0 // indirect
)
