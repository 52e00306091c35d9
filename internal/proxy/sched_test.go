package proxy

import "runtime"

func runtimeGosched() { runtime.Gosched() }
