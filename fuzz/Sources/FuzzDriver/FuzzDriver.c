// The declaration in include/ is all this target provides; libFuzzer itself comes with
// -sanitize=fuzzer.
