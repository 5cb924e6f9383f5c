#include "server/model/split_chooser.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

using Kind = SplitChooser::Kind;

// Runs `forwards` forwards: each asks Next and records the time `seconds(kind)` for one
// unit of work. Returns the kinds run, in order.
template <typename Seconds>
std::vector<Kind> Drive(SplitChooser& chooser, int forwards, Seconds seconds) {
  std::vector<Kind> kinds;
  for (int i = 0; i < forwards; ++i) {
    const Kind kind = chooser.Next();
    chooser.Record(kind, seconds(kind), 1.0);
    kinds.push_back(kind);
  }
  return kinds;
}

int Count(const std::vector<Kind>& kinds, Kind kind, size_t from = 0) {
  int n = 0;
  for (size_t i = from; i < kinds.size(); ++i) n += kinds[i] == kind;
  return n;
}

SplitChooser::Options Small() {
  SplitChooser::Options o;
  o.window = 3;
  o.probe_every = 10;
  o.short_forward_seconds = 1e9;  // every forward is short
  return o;
}

// The warm-up runs split, then single, until each has `window` observations after its
// first; then the faster one runs.
TEST(SplitChooserTest, WarmUpRunsBothThenPicksTheFaster) {
  SplitChooser chooser(Small());
  EXPECT_NE(chooser.Describe().find("measuring"), std::string::npos);
  const std::vector<Kind> kinds =
      Drive(chooser, 8, [](Kind k) { return k == Kind::kSplit ? 2.0 : 1.0; });
  EXPECT_EQ(kinds, std::vector<Kind>({Kind::kSplit, Kind::kSplit, Kind::kSplit, Kind::kSplit,
                                      Kind::kSingle, Kind::kSingle, Kind::kSingle, Kind::kSingle}));
  EXPECT_EQ(chooser.Next(), Kind::kSingle);
  EXPECT_NE(chooser.Describe().find("one image: single (split 2000000000000.00 ms/GMAC, single "
                                    "1000000000000.00 ms/GMAC"),
            std::string::npos)
      << chooser.Describe();
}

// The first observation of each kind (primitives being made) does not count: a slow
// first split forward does not make single win.
TEST(SplitChooserTest, DropsEachKindsFirstObservation) {
  SplitChooser chooser(Small());
  int split_seen = 0;
  Drive(chooser, 8, [&](Kind k) {
    if (k == Kind::kSingle) return 1.0;
    return ++split_seen == 1 ? 100.0 : 0.5;
  });
  EXPECT_EQ(chooser.Next(), Kind::kSplit);
}

// One slow forward among fast ones (an interrupt, a page fault) does not flip the
// choice: the median of the window ignores it.
TEST(SplitChooserTest, OneOutlierDoesNotFlipTheChoice) {
  SplitChooser chooser(Small());
  Drive(chooser, 8, [](Kind k) { return k == Kind::kSplit ? 0.8 : 1.0; });
  int split_seen = 0;
  const std::vector<Kind> kinds = Drive(chooser, 9, [&](Kind k) {
    if (k == Kind::kSingle) return 1.0;
    return ++split_seen == 1 ? 50.0 : 0.8;
  });
  EXPECT_EQ(Count(kinds, Kind::kSplit), 9);
}

// After the warm-up the faster kind runs and the other one once every probe_every.
TEST(SplitChooserTest, ProbesTheOtherKindEveryProbeEvery) {
  SplitChooser chooser(Small());
  const std::vector<Kind> kinds =
      Drive(chooser, 508, [](Kind k) { return k == Kind::kSplit ? 1.0 : 1.1; });
  EXPECT_EQ(Count(kinds, Kind::kSingle, 8), 50);  // 500 forwards / 10
}

// The machine changes (the host moves the vCPUs far apart, then back): the choice
// follows within a few forwards one way and a few probes the other.
TEST(SplitChooserTest, FollowsAChangeOfMachineBothWays) {
  SplitChooser chooser(Small());
  double split_seconds = 0.8;  // near cores: split wins
  Drive(chooser, 30, [&](Kind k) { return k == Kind::kSplit ? split_seconds : 1.0; });
  EXPECT_EQ(chooser.Next(), Kind::kSplit);

  split_seconds = 1.6;  // far apart: split now loses, within window / 2 + 1 forwards
  std::vector<Kind> kinds =
      Drive(chooser, 20, [&](Kind k) { return k == Kind::kSplit ? split_seconds : 1.0; });
  EXPECT_GE(Count(kinds, Kind::kSingle, 3), 15) << "single should run from the 3rd forward on";

  split_seconds = 0.8;  // close again: found by the probes, two of them (every 10)
  kinds = Drive(chooser, 100, [&](Kind k) { return k == Kind::kSplit ? split_seconds : 1.0; });
  EXPECT_GE(Count(kinds, Kind::kSplit, 30), 63) << "split should run again by forward 30";
}

// Forwards that take short_forward_seconds or more split: single is never tried.
TEST(SplitChooserTest, LongForwardsNeverTrySingle) {
  SplitChooser::Options o = Small();
  o.short_forward_seconds = 0.005;
  SplitChooser chooser(o);
  const std::vector<Kind> kinds = Drive(chooser, 500, [](Kind) { return 0.02; });
  EXPECT_EQ(Count(kinds, Kind::kSingle), 0);
  EXPECT_NE(chooser.Describe().find("split (forwards of 20.0 ms: single not tried)"),
            std::string::npos)
      << chooser.Describe();
}

// Work normalises the times: a forward of twice the MACs may take twice as long.
TEST(SplitChooserTest, ComparesTimePerUnitOfWork) {
  SplitChooser chooser(Small());
  for (int i = 0; i < 12; ++i) {
    const Kind kind = chooser.Next();
    if (kind == Kind::kSplit) {
      chooser.Record(kind, 1.5, 2.0);  // 0.75 per unit
    } else {
      chooser.Record(kind, 1.0, 1.0);  // 1.0 per unit, faster per forward
    }
  }
  EXPECT_EQ(chooser.Next(), Kind::kSplit);
}

TEST(SplitChooserTest, IgnoresObservationsWithoutWork) {
  SplitChooser chooser(Small());
  for (int i = 0; i < 10; ++i) chooser.Record(Kind::kSplit, 1.0, 0.0);
  EXPECT_NE(chooser.Describe().find("measuring (0 split, 0 single"), std::string::npos)
      << chooser.Describe();
}

}  // namespace
}  // namespace vitserve
