package require

// The programs of the application tests (test/e2e/java_test.go,
// mail_test.go, vnc_test.go) and their Debian packages, in a file of their
// own so that the lists in require.go stay easy to merge.
func init() {
	for _, tp := range [][2]string{
		{"java", "default-jdk-headless"}, {"javac", "default-jdk-headless"},
		{"jcmd", "default-jdk-headless"}, {"jstat", "default-jdk-headless"},
		{"postfix", "postfix"}, {"postconf", "postfix"}, {"sendmail", "postfix"},
		{"Xtigervnc", "tigervnc-standalone-server"}, {"xterm", "xterm"},
		{"xclock", "x11-apps"}, {"xwd", "x11-apps"}, {"xdpyinfo", "x11-utils"}, {"xwininfo", "x11-utils"},
	} {
		toolPackage[tp[0]] = tp[1]
		CITools = append(CITools, tp[0])
	}
}
