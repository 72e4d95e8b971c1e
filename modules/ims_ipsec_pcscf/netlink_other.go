//go:build !linux

package ims_ipsec_pcscf

import "errors"

var errNotLinux = errors.New("ims_ipsec_pcscf needs Linux xfrm")

// NetlinkKernel is unavailable off Linux: every call fails.
type NetlinkKernel struct{}

func NewNetlinkKernel() *NetlinkKernel                      { return &NetlinkKernel{} }
func (*NetlinkKernel) Probe(SPIRange) error                 { return errNotLinux }
func (*NetlinkKernel) Install(*SASet) error                 { return errNotLinux }
func (*NetlinkKernel) Remove(*SASet) error                  { return errNotLinux }
func (*NetlinkKernel) List(SPIRange) ([]StateInfo, error)   { return nil, errNotLinux }
func (*NetlinkKernel) PolicyCount(SPIRange) (int, error)    { return 0, errNotLinux }
func (*NetlinkKernel) RemoveOwned(SPIRange) (int, error)    { return 0, errNotLinux }
func (*NetlinkKernel) XfrmStat() (map[string]uint64, error) { return nil, errNotLinux }
