import FuzzDriver
import Foundation

// libFuzzer's driver: it parses its flags (-runs, -max_total_time, corpus folders...) and
// calls the check with each input.
var arguments = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&arguments, &argv, { data, count in fuzzConfig(data, count) }))
