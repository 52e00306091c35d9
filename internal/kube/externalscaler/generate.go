// Package externalscaler is the generated Go code of KEDA's external scaler
// gRPC interface (externalscaler.proto, package externalscaler as KEDA
// defines it). sluice serves it from internal/kube; nothing here is written
// by hand except this file and the .proto.
//
// Regenerate with protoc, protoc-gen-go and protoc-gen-go-grpc on PATH:
//
//	go generate ./internal/kube/externalscaler
package externalscaler

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative externalscaler.proto
