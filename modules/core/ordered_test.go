package core

import (
	"reflect"
	"testing"
)

func TestOrdered(t *testing.T) {
	var o Ordered[int]
	if _, ok := o.Get("a"); ok {
		t.Fatal("zero Ordered has a")
	}
	o.Add("b", 1, false)
	o.Add("c", 2, false)
	o.Add("a", 3, true)
	o.Add("b", 4, false) // replaces in place
	if got, want := o.Names(), []string{"a", "b", "c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Names = %v, want %v", got, want)
	}
	if got, want := o.Values(), []int{3, 4, 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Values = %v, want %v", got, want)
	}
	if v, ok := o.Get("b"); !ok || v != 4 {
		t.Fatalf("Get(b) = %v %v", v, ok)
	}
}
