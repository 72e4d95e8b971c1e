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

func TestPerEnv(t *testing.T) {
	var p PerEnv[*int]
	e1, e2 := &Env{}, &Env{}
	a, b := new(int), new(int)
	if p.Of(e1) != nil {
		t.Fatal("empty PerEnv has an instance")
	}
	p.Set(e1, a)
	p.Set(e2, b)
	if p.Of(e1) != a || p.Of(e2) != b {
		t.Fatal("Of does not give the instance Set")
	}
	p.Drop(e1, b) // not e1's: kept
	if p.Of(e1) != a {
		t.Fatal("Drop of another instance removed e1's")
	}
	p.Drop(e1, a)
	if p.Of(e1) != nil {
		t.Fatal("Drop did not remove e1's instance")
	}
}
