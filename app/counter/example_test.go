package counter_test

import (
	"fmt"
	"math"

	"github.com/pbftkit/pbft/app/counter"
)

func ExampleCounter() {
	c := counter.New()
	for _, op := range [][]byte{counter.Add(40), counter.Add(2), counter.Get(), counter.Add(math.MaxInt64), []byte("junk")} {
		value, errMsg, err := counter.DecodeResult(c.Execute(op))
		fmt.Printf("value=%d errMsg=%q err=%v\n", value, errMsg, err)
	}
	// Output:
	// value=40 errMsg="" err=<nil>
	// value=42 errMsg="" err=<nil>
	// value=42 errMsg="" err=<nil>
	// value=0 errMsg="counter overflow" err=<nil>
	// value=0 errMsg="malformed operation" err=<nil>
}
