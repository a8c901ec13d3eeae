package main

// Version is reported by -V/--version. criu clients parse "Version: X.Y";
// stasis reports the criu release whose image format and RPC it implements.
var Version = "4.2 (stasis 0.1)"
