// A plain grpc-go echo server, the second baseline of bench/suite.py beside
// bench/stock-tonic: the same bench.Echo service (Unary and Bidi, of
// bench/stock-tonic/proto/bench.proto), what a user would write from
// grpc-go's own examples. Its messages are echoed as the bytes that came, with
// a pass-through codec, so that no generated code is needed (Debian's
// golang-google-grpc-dev has grpc-go and nothing to generate with) and the
// echo does no more work than the other servers' do.
//
// Built by bench/suite.py with Debian's Go and grpc-go, in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o grpc-go-echo bench/grpc-go/main.go
//
// Usage: grpc-go-echo [ADDR] (default 127.0.0.1:50062).
package main

import (
	"context"
	"io"
	"log"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// passThrough hands over each message's bytes as they are: the proto
// codec's place, so it is registered under its name.
type passThrough struct{}

func (passThrough) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }

func (passThrough) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}

func (passThrough) Name() string { return "proto" }

func unary(_ interface{}, _ context.Context, decode func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var message []byte
	if err := decode(&message); err != nil {
		return nil, err
	}
	return &message, nil
}

func bidi(_ interface{}, stream grpc.ServerStream) error {
	for {
		var message []byte
		if err := stream.RecvMsg(&message); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := stream.SendMsg(&message); err != nil {
			return err
		}
	}
}

var echoService = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*interface{})(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: unary}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Bidi",
		Handler:       bidi,
		ServerStreams: true,
		ClientStreams: true,
	}},
}

type echo struct{}

func main() {
	encoding.RegisterCodec(passThrough{})
	addr := "127.0.0.1:50062"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer()
	server.RegisterService(&echoService, echo{})
	log.Fatal(server.Serve(listener))
}
