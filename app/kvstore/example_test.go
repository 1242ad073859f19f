package kvstore_test

import (
	"fmt"

	"github.com/pbftkit/pbft/app/kvstore"
)

func ExampleStore() {
	s := kvstore.New()
	show := func(result []byte) {
		r, err := kvstore.DecodeResult(result)
		if err != nil {
			fmt.Println("bad result:", err)
			return
		}
		fmt.Printf("ok=%v found=%v value=%q err=%q\n", r.OK, r.Found, r.Value, r.Err)
	}
	show(s.Execute(kvstore.Put("color", []byte("red"))))
	show(s.Execute(kvstore.Get("color")))
	show(s.Execute(kvstore.CAS("color", []byte("blue"), []byte("green")))) // mismatch
	show(s.Execute(kvstore.CAS("color", []byte("red"), []byte("green"))))
	show(s.Execute(kvstore.Get("color")))
	show(s.Execute(kvstore.Delete("color")))
	show(s.Execute([]byte("not an operation")))
	// Output:
	// ok=true found=false value="" err=""
	// ok=true found=true value="red" err=""
	// ok=false found=true value="red" err="compare-and-swap mismatch"
	// ok=true found=true value="" err=""
	// ok=true found=true value="green" err=""
	// ok=true found=true value="" err=""
	// ok=false found=false value="" err="malformed operation"
}
