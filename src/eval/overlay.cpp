#include "eval/overlay.h"

#include "instinct/common/error.h"
#include "instinct/io/atomic_file.h"

#ifdef INSTINCT_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace instinct::eval {

#ifdef INSTINCT_WITH_IMGCODECS
bool overlays_supported() { return true; }

namespace {
cv::Mat to_mat(const Rle& r) {
  cv::Mat m(r.h, r.w, CV_8U);
  rle_decode(r, m.ptr<uint8_t>());
  return m;
}
}  // namespace

void write_overlay(const std::string& png_path, const std::string& image_path, int height, int width,
                   const std::vector<OverlayPanel>& panels, int columns, int panel_size) {
  INSTINCT_ASSERT(columns > 0 && !panels.empty());
  cv::Mat img = cv::imread(image_path, cv::IMREAD_COLOR);
  if (img.empty() || img.rows != height || img.cols != width) img = cv::Mat(height, width, CV_8UC3, cv::Scalar(128, 128, 128));
  const double s = std::min(1.0, double(panel_size) / std::max(height, width));
  const int ph = std::max(1, int(std::lround(height * s))), pw = std::max(1, int(std::lround(width * s)));
  const int cap = 18, gap = 4;  // caption strip height, space between panels
  const int rows = int((panels.size() + size_t(columns) - 1) / size_t(columns));
  cv::Mat canvas(rows * (ph + cap), columns * (pw + gap) - gap, CV_8UC3, cv::Scalar(32, 32, 32));
  for (size_t i = 0; i < panels.size(); ++i) {
    const auto& p = panels[i];
    cv::Mat v = img.clone();
    cv::Mat pred = to_mat(p.pred), gt = to_mat(p.gt);
    cv::Mat red(v.size(), CV_8UC3, cv::Scalar(0, 0, 255)), blended;
    cv::addWeighted(v, 0.55, red, 0.45, 0, blended);
    blended.copyTo(v, pred);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(gt, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
    const int thick = std::max(1, int(std::lround(2 / s)));
    cv::drawContours(v, contours, -1, cv::Scalar(0, 255, 0), thick);
    if (p.has_box)
      cv::rectangle(v, cv::Point2d(p.box[0], p.box[1]), cv::Point2d(p.box[2], p.box[3]), cv::Scalar(0, 255, 255), thick);
    if (p.has_point) {
      cv::circle(v, cv::Point2d(p.point[0], p.point[1]), 3 * thick, cv::Scalar(255, 255, 0), cv::FILLED);
      cv::circle(v, cv::Point2d(p.point[0], p.point[1]), 3 * thick, cv::Scalar(0, 0, 0), std::max(1, thick / 2));
    }
    const int r = int(i) / columns, c = int(i) % columns;
    const int x0 = c * (pw + gap);
    cv::Mat cell = canvas(cv::Rect(x0, r * (ph + cap) + cap, pw, ph));
    cv::resize(v, cell, cell.size(), 0, 0, cv::INTER_AREA);
    int base = 0;
    const double tw = cv::getTextSize(p.caption, cv::FONT_HERSHEY_SIMPLEX, 0.4, 1, &base).width;
    const double fs = std::max(0.25, std::min(0.4, 0.4 * (pw - 6) / std::max(tw, 1.0)));
    cv::putText(canvas, p.caption, cv::Point(x0 + 3, r * (ph + cap) + cap - 5), cv::FONT_HERSHEY_SIMPLEX, fs,
                cv::Scalar(235, 235, 235), 1, cv::LINE_AA);
  }
  std::vector<uint8_t> png;
  INSTINCT_CHECK(cv::imencode(".png", canvas, png), "cannot encode overlay PNG for '", png_path, "'");
  io::write_file_atomic(png_path, std::string(png.begin(), png.end()));
}
#else
bool overlays_supported() { return false; }
void write_overlay(const std::string& png_path, const std::string&, int, int, const std::vector<OverlayPanel>&, int,
                   int) {
  fail("cannot write overlay '", png_path, "': built with INSTINCT_WITH_IMGCODECS=OFF");
}
#endif

}  // namespace instinct::eval
