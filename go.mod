module github.com/stasis-cr/stasis

go 1.26.8

require (
	github.com/checkpoint-restore/go-criu/v8 v8.3.0
	github.com/spf13/cobra v1.10.2
	github.com/spf13/pflag v1.0.9
	golang.org/x/sys v0.50.0
	google.golang.org/protobuf v1.36.12
)

require github.com/inconshreveable/mousetrap v1.1.0 // indirect
