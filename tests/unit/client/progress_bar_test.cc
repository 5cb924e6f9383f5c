#include "client/progress_bar.h"

#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

TEST(FormatEtaTest, MinutesAndHours) {
  EXPECT_EQ(FormatEta(0), "0:00");
  EXPECT_EQ(FormatEta(9.6), "0:10");
  EXPECT_EQ(FormatEta(75), "1:15");
  EXPECT_EQ(FormatEta(3725), "1:02:05");
  EXPECT_EQ(FormatEta(-1), "?");
  EXPECT_EQ(FormatEta(1.0 / 0.0), "?");
}

TEST(FormatProgressTest, BarCountRateEta) {
  // 50 of 100 in 10 s: 5/s, 50 left -> 10 s.
  EXPECT_EQ(FormatProgress(50, 100, 0, 10.0, 10), "[#####.....] 50/100  5.0/s  ETA 0:10");
  EXPECT_EQ(FormatProgress(100, 100, 2, 4.0, 4), "[####] 100/100  25.0/s  ETA 0:00  (2 failed)");
}

TEST(FormatProgressTest, NothingDoneYetHasUnknownEta) {
  EXPECT_EQ(FormatProgress(0, 10, 0, 0.0, 5), "[.....] 0/10  0.0/s  ETA ?");
}

TEST(FormatProgressTest, UnknownTotalShowsCountAndRateOnly) {
  EXPECT_EQ(FormatProgress(30, 0, 1, 3.0, 10), "30  10.0/s  (1 failed)");
}

TEST(ProgressBarTest, DisabledBarWritesNothingButPrintsLines) {
  std::FILE* bar_out = std::tmpfile();
  std::FILE* lines = std::tmpfile();
  ASSERT_NE(bar_out, nullptr);
  ASSERT_NE(lines, nullptr);
  {
    ProgressBar bar(10, /*enabled=*/false, bar_out);
    bar.Update(5, 0);
    bar.PrintLine(lines, "hello");
    bar.Finish();
  }
  EXPECT_EQ(std::ftell(bar_out), 0);
  EXPECT_EQ(std::ftell(lines), 6);  // "hello\n"
  std::fclose(bar_out);
  std::fclose(lines);
}

TEST(ProgressBarTest, EnabledBarEndsWithFinalStateAndNewline) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  ProgressBar bar(4, /*enabled=*/true, out);
  bar.Update(4, 1);
  bar.Finish();
  bar.Finish();  // idempotent
  const long size = std::ftell(out);
  std::rewind(out);
  std::string text(static_cast<size_t>(size), '\0');
  ASSERT_EQ(std::fread(text.data(), 1, text.size(), out), text.size());
  std::fclose(out);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1);  // exactly one newline
  EXPECT_NE(text.rfind("4/4"), std::string::npos);
  EXPECT_NE(text.rfind("(1 failed)"), std::string::npos);
}

}  // namespace
}  // namespace vitserve::client
