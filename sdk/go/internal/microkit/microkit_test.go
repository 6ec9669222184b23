package microkit

import (
	"testing"

	regpb "github.com/strata-db/strata/sdk/go/gen/strata/registry/v1"
)

// A Micro-shaped type whose fields are in another order, as go-micro v5's Node is.
type otherNode struct {
	Metadata map[string]string `json:"metadata"`
	Id       string            `json:"id"`
	Address  string            `json:"address"`
}

func TestConvertGoesThroughTheCommonJSONForm(t *testing.T) {
	in := []*otherNode{{Id: "n1", Address: "a:1", Metadata: map[string]string{"k": "v"}}}
	out, err := Convert[[]*Node](in)
	if err != nil || len(out) != 1 || out[0].Id != "n1" || out[0].Address != "a:1" || out[0].Metadata["k"] != "v" {
		t.Fatalf("got %+v %v", out, err)
	}
	back, err := Convert[[]*otherNode](out)
	if err != nil || back[0].Id != "n1" {
		t.Fatalf("back: %+v %v", back, err)
	}
}

func TestTheDomainIsWhereAServiceLivesNotItsData(t *testing.T) {
	s := &Service{
		Name: "cart", Version: "1", Metadata: map[string]string{"domain": "shop", "team": "a"},
		Endpoints: []*Endpoint{{Name: "Cart.Add", Request: &Value{Name: "req", Type: "AddRequest", Values: []*Value{{Name: "id", Type: "string"}}}}},
		Nodes:     []*Node{{Id: "n1", Address: "a:1", Metadata: map[string]string{"domain": "shop"}}, nil},
	}
	pb := toStrata(s)
	if _, ok := pb.GetMetadata()["domain"]; ok || pb.GetMetadata()["team"] != "a" {
		t.Fatalf("service metadata stored: %v", pb.GetMetadata())
	}
	if len(pb.GetNodes()) != 1 || len(pb.GetNodes()[0].GetMetadata()) != 0 {
		t.Fatalf("nodes stored: %v", pb.GetNodes())
	}
	if pb.GetEndpoints()[0].GetRequest().GetValues()[0].GetName() != "id" {
		t.Fatalf("endpoint types stored: %v", pb.GetEndpoints())
	}
	back := toMicro(pb, "shop")
	if back.Metadata["domain"] != "shop" || back.Nodes[0].Metadata["domain"] != "shop" || back.Endpoints[0].Request.Values[0].Type != "string" {
		t.Fatalf("read back: %+v", back)
	}
	// A wildcard read names each service's own namespace.
	pb.Namespace = "other"
	if got := toMicro(pb, "*"); got.Metadata["domain"] != "other" {
		t.Fatalf("wildcard read: %v", got.Metadata)
	}
}

func TestEventsBecomeMicroActions(t *testing.T) {
	for typ, want := range map[regpb.Event_Type]string{
		regpb.Event_TYPE_CREATE: "create", regpb.Event_TYPE_UPDATE: "update", regpb.Event_TYPE_DELETE: "delete", regpb.Event_TYPE_UNSPECIFIED: "",
	} {
		if got := actionOf(typ); got != want {
			t.Errorf("%v: %q, want %q", typ, got, want)
		}
	}
}

func TestStoreMetadataIsKeptAsText(t *testing.T) {
	got := metadataToStrata(map[string]interface{}{"n": 12, "ok": true, "s": "x"})
	if got["n"] != "12" || got["ok"] != "true" || got["s"] != "x" {
		t.Fatalf("got %v", got)
	}
	if metadataToStrata(nil) != nil {
		t.Fatal("no metadata stays none")
	}
}
